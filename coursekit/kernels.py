"""The kernel managers coursekit and the test suite start kernels with: unix sockets, no TCP ports.

jupyter_client's default transport (tcp) picks a kernel's five ports by binding port 0 on 127.0.0.1
and closing the socket; the kernel binds those ports a moment later. In between, any outgoing
connection on the machine may be given the same ephemeral port, and the kernel dies with `ZMQError:
Address already in use` (jupyter_client issue 487; its LocalPortCache only keeps two kernels of ONE
process apart). A busy test run (4 workers, thousands of HTTP requests on 127.0.0.1) hit it.

zmq's ipc transport binds socket files instead: `<connection file>-ipc-1` ... `-5`, next to the
connection file in Jupyter's runtime folder (mode 0700), a name no other kernel uses: nothing to race
for. jupyter_client supports it (`KernelManager.transport = "ipc"`), but with its default, empty
`connection_file` it names the sockets `kernel-ipc-N` RELATIVE to each process's working folder (the
manager's and the kernel's differ), so the connection file gets an absolute name here.

A socket's path must fit sockaddr_un (108 bytes on Linux, 104 on macOS): where the runtime folder is
too deep for that, and where unix sockets are not POSIX (Windows), the kernel keeps tcp. JupyterLab
starts learners' kernels with its own managers: this changes nothing there.

These kernels also start without ipykernel's debugger (coursekit/kernel_launcher.py says why), and
without two of jupyter_client's fixed waits, hundreds of times a test run (measured at load ~15:
about 0.27 s of a kernel's start and stop):
- ready: after the kernel's reply to kernel_info, the client reads IOPub until nothing has come for
  0.2 s, every time. What it waits for is the request's own `idle` status, the last message the request
  causes: read until that one, then nothing of it is left to drain. ipykernel 7's greeting of a new
  IOPub subscriber (iopub_welcome, no parent) can still come after it; later readers (nbval, nbclient)
  skip any message whose parent is not their own request.
- stopped: the manager polls a killed or shut-down kernel's process every 0.1 s; every 0.01 s here.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from queue import Empty

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import AsyncKernelManager, KernelManager
from jupyter_client.utils import ensure_async, run_sync
from jupyter_core.paths import jupyter_runtime_dir
from traitlets import default

SOCKET_PATH_MAX = 100  # below both systems' sun_path (108 Linux, 104 macOS), with its NUL
IOPUB_CONNECTED_WITHIN = 0.2  # seconds after the reply: jupyter_client's own bound for IOPub's first message
STOPPED_POLL_INTERVAL = 0.01  # jupyter_client's: 0.1


class ReadyOnItsIdle:
    """wait_for_ready as jupyter_client's, ending on the kernel_info request's own `idle` status."""

    async def _async_wait_for_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
        while True:
            request = self.kernel_info()
            try:
                reply = await ensure_async(self.shell_channel.get_msg(timeout=1))
            except Empty:
                reply = None
            # IOPub is a subscription: messages published before it connects are lost, so a request
            # whose idle status does not come is asked again (as jupyter_client does).
            if reply is not None and reply["msg_type"] == "kernel_info_reply" and await self._idle_after(request):
                self._handle_kernel_info_reply(reply)
                return
            if not await ensure_async(self.is_alive()):
                raise RuntimeError("Kernel died before replying to kernel_info")  # jupyter_client's words (runner.py)
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout:.0f} seconds")

    async def _idle_after(self, request: str) -> bool:
        until = time.monotonic() + IOPUB_CONNECTED_WITHIN
        while (left := until - time.monotonic()) > 0:
            try:
                message = await ensure_async(self.iopub_channel.get_msg(timeout=left))
            except Empty:
                return False
            if (message["msg_type"] == "status" and message["content"].get("execution_state") == "idle"
                    and message["parent_header"].get("msg_id") == request):
                return True
        return False


class ReadyBlockingKernelClient(ReadyOnItsIdle, BlockingKernelClient):
    wait_for_ready = run_sync(ReadyOnItsIdle._async_wait_for_ready)


class ReadyAsyncKernelClient(ReadyOnItsIdle, AsyncKernelClient):
    wait_for_ready = ReadyOnItsIdle._async_wait_for_ready


class UnixSocketKernelManager(KernelManager):
    """jupyter_client's KernelManager (nbval's) on unix sockets."""

    @default("client_factory")
    def _ready_client(self) -> type:
        return ReadyBlockingKernelClient

    async def _async_wait(self, pollinterval: float = STOPPED_POLL_INTERVAL) -> None:
        await super()._async_wait(pollinterval=min(pollinterval, STOPPED_POLL_INTERVAL))

    @default("connection_file")
    def _connection_file_in_runtime_dir(self) -> str:
        runtime = jupyter_runtime_dir()
        os.makedirs(runtime, mode=0o700, exist_ok=True)
        # short (the sockets' path budget), random (no kernel of another process or worker shares it)
        return os.path.join(runtime, f"kernel-{secrets.token_hex(8)}.json")

    @default("transport")
    def _unix_sockets_where_they_fit(self) -> str:
        longest = os.path.splitext(self.connection_file)[0] + "-ipc-99"
        return "ipc" if os.name == "posix" and len(os.fsencode(longest)) <= SOCKET_PATH_MAX else "tcp"

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        command = super().format_kernel_cmd(extra_arguments)
        # ipykernel's own kernel on this Python: the same launcher, without the debugger's imports
        if command[:3] == [sys.executable, "-m", "ipykernel_launcher"]:
            command[1:3] = ["-m", "coursekit.kernel_launcher"]
        return command


class AsyncUnixSocketKernelManager(UnixSocketKernelManager, AsyncKernelManager):
    """jupyter_client's AsyncKernelManager (nbclient's) on unix sockets."""

    @default("client_factory")
    def _ready_client(self) -> type:
        return ReadyAsyncKernelClient
