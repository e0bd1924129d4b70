"""The offline demo's gossip peer (``lnsync up --demo``)."""
