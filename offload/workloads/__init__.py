"""The work behind the reference app's tasks (``tasks.py``): reports, primes, the third-party API, language
identification, newsletters and housekeeping. Each module is imported when its task first runs."""
