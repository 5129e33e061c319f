"""Devex: an open control plane for cloud-IDE workspaces."""


def create_app(test_config=None):
    # Imported lazily so that ``devex.infra.storage`` and ``devex.tokens`` stay usable by
    # the runner image, which ships without Flask.
    from devex.app import create_app as _create_app

    return _create_app(test_config)
