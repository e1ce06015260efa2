from edgedistill.cli import main

main()
