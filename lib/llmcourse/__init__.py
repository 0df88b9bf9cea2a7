"""llmcourse: the tested reference implementations behind the course notebooks.

Each module is one idea, small enough to read in one sitting. Notebooks show the idea inline,
then import the reference from here and check that both agree.
"""

__version__ = "0.1.0"
