"""A query file in, a suggestion out: reading a query fragment by fragment (`query`), the
offset-consistent votes (`votes`), the scoring along an alignment (`align`), the check against
the reference audio (`verify`), the decision and its confidence (`decide`), and a folder scan
with its JSON document (`scan`). The settings are `config.MatchConfig`."""
