"""Speed measurements (`make benchmark`, `make benchmark-sebulba`).

They run the system scripts as a user would and sit on the top floor: nothing imports them.
"""
