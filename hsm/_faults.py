"""A fault switch for tests: the token failing on demand, in a running server's processes.

Never configured in production. A test points ``hsm.connect(fault_file=...)`` (the service's
``VAULT_TEST_HSM_FAULT_FILE``) at a file and writes one of these lines into it:

- ``device-error``: while the file says so, every job and every attempt to open a session
  fails with ``CKR_DEVICE_ERROR``, as a broken device or a cut link to a network HSM does;
- ``logged-out <tag>``: the next job finds the token logged out (``CKR_USER_NOT_LOGGED_IN``,
  as after the HSM restarted), once per process for each new ``<tag>``;
- ``session-closed <tag>``: the session is really closed (``C_Logout`` + ``C_CloseSession``)
  before the next job, which then meets the token's own error, once per process per tag.

Removing the file (or emptying it) ends a fault. The errors raised are python-pkcs11's own,
so they take the same way through the adapter as the token's would.
"""

from __future__ import annotations

import os
from typing import Any

import pkcs11.exceptions as p11e

_STICKY = {"device-error": p11e.DeviceError}
_ONCE = {"logged-out", "session-closed"}


class FaultSwitch:
    def __init__(self, path: str) -> None:
        self._path = path
        self._seen: tuple[int, int, int] | None = None
        self._line = ""
        self._done: set[str] = set()

    def _current(self) -> str:
        """The file's line, read again only when the file changed."""
        try:
            st = os.stat(self._path)
        except OSError:
            self._seen, self._line = None, ""
            return ""
        seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        if seen != self._seen:
            try:
                with open(self._path, encoding="utf-8") as fh:
                    self._line = fh.read().strip()
            except OSError:
                self._line = ""
            self._seen = seen
        return self._line

    def before_open(self) -> None:
        """Before a session is opened: a broken device cannot be logged into."""
        sticky = _STICKY.get(self._current().split(" ", 1)[0])
        if sticky is not None:
            raise sticky()

    def before_job(self, ops: Any) -> None:
        """Before a job: the fault the file names, if any (``ops`` is the open session)."""
        line = self._current()
        kind = line.split(" ", 1)[0]
        sticky = _STICKY.get(kind)
        if sticky is not None:
            raise sticky()
        if kind not in _ONCE or line in self._done:
            return
        self._done.add(line)
        if kind == "logged-out":
            raise p11e.UserNotLoggedIn()
        ops.close()  # session-closed: the next PKCS#11 call meets a closed session
