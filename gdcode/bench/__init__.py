"""Benchmarks behind ``gdcode bench TARGET``: one module per target (see
:data:`gdcode.commands.bench.TARGETS`), each with ``add_arguments(parser)`` and
``main(args) -> int``. Speed goals are printed as ratios measured in one run, never asserted
by timed tests.
"""
