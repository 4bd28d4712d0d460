"""``otp.__all__`` is the public API of DESIGN section 2 that exists so far, and nothing else."""
import otp

PROCESS_API = {"spawn", "spawn_link", "spawn_monitor", "self", "send", "receive", "link", "unlink",
               "monitor", "demonitor", "exit", "trap_exit", "register", "unregister", "whereis",
               "registered", "is_alive", "os_pid", "process_info", "processes"}
TERMS = {"Pid", "Ref", "Exit", "Down", "NodeUp", "NodeDown", "Tcp", "TcpClosed"}
NODES = {"Node", "Broker", "node", "nodes", "monitor_nodes", "cluster"}
ERRORS = {"OtpError", "NoProc", "ExitError", "Timeout", "CallTimeout", "StartError", "AlreadyStarted",
          "ChildSpecError", "SupervisorError", "NodeError", "DecodeError"}
SUPERVISOR = {"Supervisor", "SupFlags", "ChildSpec", "child_spec", "supervisor"}
JOBS = {"jobs", "WorkerCrashed", "chaos", "observer", "tcp"}
GEN_SERVER = {"GenServer", "call", "cast", "reply", "stop", "Stop", "NOREPLY", "IGNORE"}


def test_all_is_the_documented_api():
    assert set(otp.__all__) == PROCESS_API | TERMS | NODES | ERRORS | GEN_SERVER | SUPERVISOR | JOBS
    assert len(otp.__all__) == len(set(otp.__all__))


def test_every_exported_name_exists_and_is_documented():
    for name in otp.__all__:
        obj = getattr(otp, name)
        assert (obj.__doc__ or "").strip(), f"otp.{name} has no docstring"
