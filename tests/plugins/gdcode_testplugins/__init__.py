"""One gdcode plug-in of each kind, written against gdcode's public extension API only.

``gdcode_testplugins.codes:PairsCode`` (entry point ``pairs``), ``gdcode_testplugins.models:
HuberRegression`` (``huber``), ``gdcode_testplugins.delays:Uniform`` (``uniform``) and
``gdcode_testplugins.updates:ClippedGD`` (``clipped-gd``). The entry points are declared in
``pyproject.toml`` beside this package.
"""
