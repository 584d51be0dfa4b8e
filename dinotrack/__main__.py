from dinotrack.cli import main

main()
