"""The trace protocol: how a forward pass shows its stages to whoever asks.

A trace is any callable ``trace(name, array, **facts)``. The forward pass calls it at each
stage with the stage's name (the names golden/'s recordings use), its array (or None for
a stage that is only facts) and the facts it used: lengths, kernel, stride, what a norm
did. npw2v2.app.explain collects and prints them; by default nothing is recorded.
"""


def untraced(name, value, **facts):
    """The default trace: record nothing."""
