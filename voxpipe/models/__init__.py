"""Local speech models in worker processes, fed through queues, off the bot's event loop.

A bot's local speech-to-text and text-to-speech engines (whisper, pocketsphinx, piper) run in
the bot's ``ModelPool``: ``models.workers`` processes (one per core by default), each loading
every model once. A processor submits jobs (``await pool.run(key, method, *args)``) and gets
the results back; the event loop carrying the calls' audio never runs a model.

* ``engine.py``: what a model must provide to run there (the contract for engine authors);
* ``pool.py``: the pool of worker processes and its queue; ``worker.py``: one worker;
* ``shared.py``: the bot's pool (``models_of(bot)``) and loading its engines at ``prepare``;
* ``capacity.py``: measuring the models on this machine to size ``max_calls: auto``;
* ``settings.py``: the bot file's ``models:`` block.

The package imports nothing heavy: the worker processes start from it.
"""
