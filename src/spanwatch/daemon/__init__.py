"""The daemon layer: time, files, signals and the service manager.

Pure pieces (`debounce`) take the clock as an argument; the rest (`wakeups`,
`notify`) own one kind of I/O each. The service that runs them is built on
these and on the store layer.
"""
