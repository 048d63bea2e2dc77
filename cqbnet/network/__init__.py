"""The composed network: paper 000's base network with its heads (``cqbnet.modeling``) and weak-supervision
plug-ins (``cqbnet.weak``), built from plain arguments (:func:`cqbnet.network.build.build_panoptic_net`)."""
