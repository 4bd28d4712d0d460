"""Erlang/OTP's own ``gen_server:call`` between two nodes on this host, the peer of
``otp.call``, and within one node, for the ratio of the two. Needs ``erl`` and ``erlc``
(Debian's ``erlang-nox``); returns None without them."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile

SERVER = r"""
-module(otp_bench_echo).
-behaviour(gen_server).
-export([start_server/0, client/2, init/1, handle_call/3, handle_cast/2]).

start_server() ->
    {ok, _} = gen_server:start({local, otp_bench_echo}, ?MODULE, [], []),
    ok.

init([]) -> {ok, nostate}.
handle_call(Request, _From, State) -> {reply, Request, State}.
handle_cast(_Msg, State) -> {noreply, State}.

client(Node, N) ->
    wait_for_server(Node, 500),
    io:format("~w~n", [times(fun() -> gen_server:call({otp_bench_echo, Node}, {ping, 1}) end, N)]),
    {ok, Local} = gen_server:start(?MODULE, [], []),
    io:format("~w~n", [times(fun() -> gen_server:call(Local, {ping, 1}) end, N)]),
    rpc:call(Node, init, stop, []).

times(Call, N) ->
    [Call() || _ <- lists:seq(1, 50)],
    [element(1, timer:tc(Call)) || _ <- lists:seq(1, N)].

wait_for_server(_Node, 0) -> exit(no_server);
wait_for_server(Node, Tries) ->
    case net_kernel:connect_node(Node) andalso rpc:call(Node, erlang, whereis, [otp_bench_echo]) of
        Pid when is_pid(Pid) -> ok;
        _ -> timer:sleep(10), wait_for_server(Node, Tries - 1)
    end.
"""


def erlang_call_times(count: int) -> list[float] | None:
    """Seconds per call of ``count`` calls from node a to a gen_server on node b, or None."""
    calls = erlang_remote_and_local_call_times(count)
    return None if calls is None else calls[0]


def erlang_remote_and_local_call_times(count: int) -> tuple[list[float], list[float]] | None:
    """Seconds per call to a gen_server on another node, then on the caller's node, or None."""
    if not (shutil.which("erl") and shutil.which("erlc")):
        return None
    epmd_was_running = _epmd_running()
    workdir = tempfile.mkdtemp(prefix="bench-erl-")
    host = socket.gethostname().split(".")[0]
    suffix = os.getpid()
    server = None
    try:
        with open(os.path.join(workdir, "otp_bench_echo.erl"), "w") as f:
            f.write(SERVER)
        subprocess.run(["erlc", "-o", workdir, os.path.join(workdir, "otp_bench_echo.erl")], check=True,
                       capture_output=True, timeout=120)
        common = ["erl", "-noshell", "-setcookie", "otp_bench", "-pa", workdir]
        server = subprocess.Popen(common + ["-sname", f"b{suffix}", "-eval", "otp_bench_echo:start_server()"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = subprocess.run(common + ["-sname", f"a{suffix}", "-eval",
                                          f"otp_bench_echo:client('b{suffix}@{host}', {count}), init:stop()."],
                                capture_output=True, text=True, timeout=300)
        server.wait(60)
        lines = client.stdout.split()
        if len(lines) < 2:
            return None
        remote, local = ([int(x) / 1e6 for x in line.strip("[]").split(",") if x] for line in lines[:2])
        return (remote, local) if remote and local else None
    finally:
        if server is not None and server.poll() is None:
            server.kill()
            server.wait()
        if not epmd_was_running:  # erl started epmd: it must not outlive the benchmark
            subprocess.run(["epmd", "-kill"], capture_output=True, timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


def _epmd_running() -> bool:
    return shutil.which("epmd") is not None and subprocess.run(
        ["epmd", "-names"], capture_output=True, timeout=30).returncode == 0
