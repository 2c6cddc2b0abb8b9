"""The suite's and coursekit's kernels listen on unix sockets, not TCP ports (coursekit/kernels.py).

A TCP kernel's ports are chosen as ephemeral ports and bound later: under a busy run an outgoing
connection took one (`ZMQError: Address already in use` at kernel start). Each kernel starter is
asked here, from inside the kernel it started, what the kernel listens on.
"""

import json
import os
import stat
import tempfile

from coursekit.corpus import CorpusRun
from coursekit.kernels import SOCKET_PATH_MAX, AsyncUnixSocketKernelManager, UnixSocketKernelManager
from coursekit.runner import execute
from tests.conftest import write_notebook

CHANNELS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")

# Run inside a kernel: what its own connection file says, and that its five sockets are unix sockets.
IN_THE_KERNEL = f"""
import json, os, stat
from ipykernel.connect import get_connection_info

info = get_connection_info(unpack=True)
assert info["transport"] == "ipc", f"the kernel listens on {{info['transport']}}://{{info['ip']}}"
sockets = [f"{{info['ip']}}-{{info[name]}}" for name in {CHANNELS!r}]
assert all(stat.S_ISSOCK(os.stat(path).st_mode) for path in sockets), sockets
print(json.dumps(info["ip"]))
"""


def unix_sockets(info: dict) -> list[str]:
    return [f"{info['ip']}-{info[name]}" for name in CHANNELS]


def test_nbvals_kernel_listens_on_unix_sockets_next_to_its_connection_file(tmp_path):
    """nbval's own kernel start (RunningKernel, as its plugin calls it): the root conftest's manager."""
    from jupyter_core.paths import jupyter_runtime_dir
    from nbval.kernel import RunningKernel

    kernel = RunningKernel("python3", cwd=str(tmp_path))
    connection_file = kernel.km.connection_file  # stop() drops the manager
    try:
        info = kernel.km.get_connection_info()
        assert (info["transport"], type(kernel.km)) == ("ipc", UnixSocketKernelManager)
        # absolute, in the runtime folder: jupyter_client's default names `kernel-ipc-N` relative to
        # each process's own working folder, and the kernel's (tmp_path) is not the manager's
        assert os.path.dirname(info["ip"]) == jupyter_runtime_dir()
        sockets = unix_sockets(info)
        assert all(stat.S_ISSOCK(os.stat(path).st_mode) for path in sockets), sockets
        reply = kernel.kc.execute_interactive(IN_THE_KERNEL, timeout=60)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        kernel.stop()
    assert not any(os.path.exists(path) for path in [*sockets, connection_file]), "left behind"


def test_course_checks_kernel_listens_on_unix_sockets(tmp_path):
    """coursekit.runner.execute: `course check`, `course grade` (its harness, in or out of the sandbox)."""
    notebook = write_notebook(tmp_path / "probe.ipynb", [("code", IN_THE_KERNEL)])
    [result] = execute(notebook, cell_timeout=60)
    assert result.cell_errors == []


def test_corpus_kernel_listens_on_unix_sockets(tmp_path):
    """coursekit.corpus.CorpusRun: it refuses a solution whose cells before the checks raise."""
    checks = "%%ipytest\n\ndef test_nothing():\n    assert True"
    solution = write_notebook(tmp_path / "solutions" / "01_x.ipynb", [
        ("code", "import pytest\nfrom coursekit import setup_checks\nsetup_checks()"),
        ("code", IN_THE_KERNEL), ("code", checks)])
    with CorpusRun(solution) as run:
        assert run.check_ids == ["test_nothing"]


def test_a_runtime_folder_too_deep_for_a_socket_path_keeps_tcp(tmp_path, monkeypatch):
    """sockaddr_un holds about 104 bytes: the kernel would die binding a longer path."""
    # A short folder for the ipc case: pytest's tmp_path under xdist (/tmp/pytest-of-root/pytest-N/popen-gwK/...)
    # is itself too deep (CI saw tcp here), as it should be.
    with tempfile.TemporaryDirectory(prefix="k", dir="/tmp") as short:
        monkeypatch.setenv("JUPYTER_RUNTIME_DIR", short)
        near, other = AsyncUnixSocketKernelManager(), AsyncUnixSocketKernelManager()
        assert (near.transport, other.transport) == ("ipc", "ipc")
        assert near.ip != other.ip  # each kernel its own sockets
    deep = tmp_path / ("d" * (SOCKET_PATH_MAX - len(str(tmp_path))))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(deep))
    far = UnixSocketKernelManager()
    assert (far.transport, far.ip) == ("tcp", "127.0.0.1")
    assert far.connection_file.startswith(str(deep))


def test_jupyter_clients_default_names_ipc_sockets_relative_to_the_working_folder():
    """Why coursekit names the connection file itself: the library's ipc default is not absolute."""
    from jupyter_client.manager import KernelManager

    assert KernelManager(transport="ipc").ip == "kernel-ipc"



# What a cell sees of the kernel's start (asked in each kernel below).
KERNEL_FACTS = """
import json, sys
print(json.dumps({"path": sys.path, "main": sys.modules["__main__"].__name__, "launcher": sys.argv[0],
                  "debugpy_imported": sys.modules.get("debugpy") is not None}))
"""


def kernel_facts(manager, folder) -> tuple[dict, list[str]]:
    """A cell's view of sys.path and the launcher, and the features the kernel_info reply lists."""
    manager.start_kernel(cwd=str(folder))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        features = client.kernel_info(reply=True, timeout=60)["content"].get("supported_features", [])
        printed = []
        reply = client.execute_interactive(KERNEL_FACTS, timeout=60, output_hook=lambda msg: printed.append(
            msg["content"].get("text", "")) if msg["msg_type"] == "stream" else None)
        assert reply["content"]["status"] == "ok", reply["content"]
        return json.loads("".join(printed)), features
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_the_suites_kernels_are_ipykernels_own_without_its_debugger(tmp_path):
    """coursekit/kernel_launcher.py: the same kernel as `python -m ipykernel_launcher` (sys.path, __main__),
    without debugpy's imports (~0.1 s of CPU per kernel start)."""
    from jupyter_client.manager import KernelManager

    class IpykernelsLauncher(UnixSocketKernelManager):  # the control: unix sockets too, ipykernel's command
        def format_kernel_cmd(self, extra_arguments=None):
            return KernelManager.format_kernel_cmd(self, extra_arguments)

    ours, ours_features = kernel_facts(UnixSocketKernelManager(kernel_name="python3"), tmp_path)
    theirs, their_features = kernel_facts(IpykernelsLauncher(kernel_name="python3"), tmp_path)
    assert theirs["launcher"].endswith("ipykernel_launcher.py") and theirs["debugpy_imported"]
    assert "debugger" in their_features  # the control: ipykernel's own launcher loads its debugger
    assert ours["launcher"].endswith(os.path.join("coursekit", "kernel_launcher.py"))
    assert not ours["debugpy_imported"] and "debugger" not in ours_features
    assert (ours["path"], ours["main"]) == (theirs["path"], theirs["main"])
    assert "" in ours["path"]  # the working folder, as IPython puts it back after the launcher took it off


def test_a_kernel_is_ready_once_its_kernel_info_is_idle_and_stopped_without_tenth_second_polls(tmp_path, monkeypatch):
    """coursekit/kernels.py: no 0.2 s of IOPub silence to wait out after kernel_info, no 0.1 s polls of a
    stopping kernel; IOPub connected when ready all the same, nothing of kernel_info left to read."""
    import asyncio
    from queue import Empty

    manager = UnixSocketKernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    sleeps, iopub_reads = [], []
    read = client.iopub_channel.get_msg

    def recorded_read(*args, **kwargs):
        try:
            message = read(*args, **kwargs)
        except Empty:
            iopub_reads.append("nothing came")
            raise
        iopub_reads.append(message["msg_type"])
        return message

    try:
        monkeypatch.setattr(client.iopub_channel, "get_msg", recorded_read)
        client.wait_for_ready(timeout=60)
        monkeypatch.undo()
        # ready on a message (kernel_info's idle status), not on a timeout of silence
        assert iopub_reads and iopub_reads[-1] == "status", iopub_reads
        # Nothing of the request's is left. ipykernel 7 greets each new IOPub subscriber (iopub_welcome)
        # from its IOPub thread, which can send it after the idle status: it has no parent request, and
        # every reader (nbval, nbclient) skips messages that are not its own request's.
        left = []
        while True:
            try:
                left.append(client.iopub_channel.get_msg(timeout=0.5))
            except Empty:
                break
        stray = [m for m in left if not (m["msg_type"] == "iopub_welcome" and not m["parent_header"])]
        assert not stray, f"left on IOPub after ready: {[(m['msg_type'], m['content']) for m in stray]}"
        printed = []
        reply = client.execute_interactive("print('connected')", timeout=60, output_hook=lambda msg: printed.append(
            msg["content"].get("text", "")) if msg["msg_type"] == "stream" else None)
        assert reply["content"]["status"] == "ok" and printed == ["connected\n"]
    finally:
        real_sleep = asyncio.sleep

        async def recorded_sleep(seconds, *args, **kwargs):
            sleeps.append(seconds)
            return await real_sleep(seconds, *args, **kwargs)

        monkeypatch.setattr(asyncio, "sleep", recorded_sleep)
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert not manager.is_alive()
    assert all(seconds <= 0.01 for seconds in sleeps), sleeps
