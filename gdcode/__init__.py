"""gdcode: straggler-tolerant distributed gradient descent over MPI.

Importing gdcode never initialises MPI; only :mod:`gdcode.runtime` does, inside functions.
"""

__version__ = "0.1.0"
