"""Process functions the tests spawn (they must be importable)."""
import os
import time

import otp


def echo():
    while True:
        msg = otp.receive()
        if msg == "stop":
            return
        sender, payload = msg
        otp.send(sender, payload)


def reply_to(parent, value):
    otp.send(parent, value)
