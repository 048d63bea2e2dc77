"""Recipes: how a network is made from labels that are not masks, one file per recipe with its model switches and
its stages (paper 001's rounds, the offline point recipe, paper 002's proposals), and ``cqbnet fit``, which composes
them for any mix of labels."""
