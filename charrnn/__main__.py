"""python -m charrnn"""

from .cli import main

main()
