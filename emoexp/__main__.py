from emoexp.cli import main

main()
