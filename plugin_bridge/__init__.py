"""The bridge between DAW plugins and the engine: wire protocol, job server, Python client (see PROTOCOL.md).

Importing this package stays cheap (no zmq, no numpy): ``backline --help`` registers ``serve`` from here.
"""
