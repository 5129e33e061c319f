"""Devex: an open control plane for cloud-IDE workspaces."""


def create_app(test_config=None):
    # Imported lazily: importing a ``devex`` module (as the workers' code does) need not load
    # Flask and the whole web app. (The runner imports none of ``devex``: it has
    # ``devex_shared``.)
    from devex.app import create_app as _create_app

    return _create_app(test_config)
