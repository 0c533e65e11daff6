"""The reference workloads from the guide: PDF reports, a flaky third-party API, an ML model, a
newsletter, number crunching, and the housekeeping jobs. Each module holds one workload; the
task declarations that run them are the app's (the reference app's ``tasks.py``)."""
