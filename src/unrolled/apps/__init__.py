"""Applications built on the library, each a package owning its data code: ``charlm``, ``forecast``,
``classify``, ``translate``, and the long-dependency ``experiments``.

Every app offers the same verbs where they apply — ``build`` (a fresh model), ``fit``, ``evaluate``,
``save``, ``load`` — and none imports argparse: the command line is :mod:`unrolled.commands`, on top.
"""
