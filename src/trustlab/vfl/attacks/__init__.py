"""Attacks by an honest-but-curious label party that sees only the messages (plus, for the white-box
audit, the party's shared weights)."""
