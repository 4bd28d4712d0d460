"""The article's TCP chat, with its bugs fixed, every part an OS process under one supervisor.

    python -m workers.chat --port 5555        # then: nc localhost 5555

A line protocol: ``JOIN room``, ``LEAVE room``, ``room text`` (said to everyone else in the
room, who read ``room text``); the server answers ``OK JOIN room``, ``OK LEAVE room`` or
``ERROR ...``.

- ``chat_sup`` (one_for_one): ``chat_sessions`` (simple_one_for_one over ``ChatSession``,
  temporary), ``room_manager`` (globally registered), and the acceptor.
- The acceptor hands each accepted connection to a new ``ChatSession`` process.
- Fixed from the article: sessions really join rooms; the room manager monitors its members,
  so a dead session leaves every room; and a restarted room manager asks every session to join
  its rooms again, so clients keep chatting without reconnecting.
"""
