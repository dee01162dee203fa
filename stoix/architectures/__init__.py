"""The architectures every system runs on.

Anakin (anakin.py): environments compiled with the learner, pmap x vmap x scan. Sebulba
(sebulba.py, on the thread plumbing in sebulba_threads.py): actor threads step host
environments, a learner trains on its own devices.
"""
