

# %% ../nbs/09_cli.ipynb #dp09c004
import sys
from qvl_nbsens.cli import main
if __name__ == '__main__': sys.exit(main())

# %% ../nbs/09_cli.ipynb #dp09c004
import sys
from qvl_nbsens.cli import main
if __name__ == '__main__': sys.exit(main())

# %% ../nbs/09_cli.ipynb #dp09c004
import sys
from qvl_nbsens.cli import main
if __name__ == '__main__': sys.exit(main())

# %% ../nbs/09_cli.ipynb #dp09c004
import sys
from qvl_nbsens.cli import main
if __name__ == '__main__': sys.exit(main())

# %% ../nbs/09_cli.ipynb #dp09c004
import sys
from qvl_nbsens.cli import main
if __name__ == '__main__': sys.exit(main())