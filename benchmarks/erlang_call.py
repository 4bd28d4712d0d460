"""Erlang/OTP's own ``gen_server:call`` between two nodes on this host, the peer of
``otp.call``. Needs ``erl`` and ``erlc`` (Debian's ``erlang-nox``); returns None without them."""
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
    Call = fun() -> gen_server:call({otp_bench_echo, Node}, {ping, 1}) end,
    [Call() || _ <- lists:seq(1, 50)],
    Times = [element(1, timer:tc(Call)) || _ <- lists:seq(1, N)],
    io:format("~w~n", [Times]),
    rpc:call(Node, init, stop, []).

wait_for_server(_Node, 0) -> exit(no_server);
wait_for_server(Node, Tries) ->
    case net_kernel:connect_node(Node) andalso rpc:call(Node, erlang, whereis, [otp_bench_echo]) of
        Pid when is_pid(Pid) -> ok;
        _ -> timer:sleep(10), wait_for_server(Node, Tries - 1)
    end.
"""


def erlang_call_times(count: int) -> list[float] | None:
    """Seconds per call of ``count`` calls from node a to a gen_server on node b, or None."""
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
        micros = [int(x) for x in client.stdout.strip().strip("[]").split(",") if x.strip()]
        return [m / 1e6 for m in micros] or None
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
