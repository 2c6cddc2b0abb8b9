# Makes `capstone.tests` a package of its own for pytest (the course's `tests` is another). The service
# itself is imported as `taskservice`, with this folder on sys.path (capstone/README.md).
