from sipwake.cli import main

main()
