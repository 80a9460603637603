"""The one exception type lrpc raises for problems it can name (bad model, bad input, bad rules)."""


class LrpcError(Exception):
    """A problem lrpc found and names: the fx node, the op, the shape or the bad argument."""
