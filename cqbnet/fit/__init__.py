"""``cqbnet fit``: one final network from any mix of labels, through the catalogue of label methods."""
