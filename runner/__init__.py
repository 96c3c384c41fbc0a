"""The queue and everything that runs work without touching torch: queue operations, preflight
checks, the scheduler loop and its daemon, saved options, and the backends runs go to.

Never imports torch (an import-linter contract): the app and the CLI use all of it at start-up.
"""
