from ztctl.cli.app import main

main()
