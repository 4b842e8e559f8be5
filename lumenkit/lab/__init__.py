"""Research area: ablations, prior correction and one-off studies. The product never imports this package.

Run its commands with ``python -m lumenkit.lab`` (or ``lumenkit-lab``).
"""

