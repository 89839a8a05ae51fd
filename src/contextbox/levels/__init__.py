"""The four levels at which the root model works on the context, one module each:

* **L1** :mod:`.commands` — JSON commands the engine runs itself (the operations are :mod:`contextbox.ops`,
  :mod:`contextbox.search` and the ``table_*`` modules, which the code levels call as helpers too);
* **L2** :mod:`.sandbox` — Python in a pydantic-monty sandbox;
* **L3** :mod:`.native` — Python in a CPython worker under OS limits (the worker: :mod:`._native_worker`;
  the limits: :mod:`.l3_guard`); :mod:`._cells` holds what L2 and L3 share (helpers, output, FINAL);
* **L4** :mod:`.delegation` — sub-model calls and child RLMs.

Each module registers its executor (:func:`contextbox.executors.register_executor`) when imported;
:mod:`contextbox.executors` imports them on first use, so importing this package costs nothing.
"""
