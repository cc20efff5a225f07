"""The flowlens error hierarchy: each error carries a message a user can act on."""


class FlowlensError(Exception):
    """Base class. ``str(err)`` is one line that says what is wrong and how to fix it."""

    exit_code = 1


class PrivilegeError(FlowlensError):
    """The process lacks root or CAP_NET_ADMIN for what it was asked to do."""

    exit_code = 77


class NamespaceError(FlowlensError):
    """A network namespace could not be entered or has vanished."""


class NetlinkError(FlowlensError):
    """The kernel answered a netlink request with an error."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


class NetlinkTimeout(NetlinkError):
    """The kernel did not answer a netlink request in time: the socket may be out of step."""


class ConfigError(FlowlensError):
    """A configuration value (flag, environment variable, YAML file) is invalid."""

    exit_code = 2
