"""Backline: generate a bass or drum stem that plays along with a mix.

The distribution maps the repository's rooms onto one import namespace:
``backline.engine`` (inference), ``backline.models`` (networks, configs, shipped weights),
``backline.data`` (paired-stem data engine), ``backline.training``, ``backline.export``
and ``backline.plugin_bridge``.
"""

__version__ = "0.1.0"
