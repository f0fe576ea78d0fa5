"""The web dashboard (``fleet dashboard``): workers, runs and their DAGs, why work waits.

``feed.py`` learns the fleet from NATS, ``shapes.py`` turns it into each page's JSON,
``server.py`` serves the pages (aiohttp, extra ``dashboard``), ``static/`` is the page
itself, plain HTML, CSS and JavaScript with no build step, and ``cli.py`` the command.
Nothing is imported here, so ``fleet --help`` stays light.
"""
