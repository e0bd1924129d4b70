"""The lnsync services, one package each. Each exposes ``async def main(settings) -> int``
(run by ``lnsync serve <name>``); pure protocol code they share lives in :mod:`lnsync`."""
