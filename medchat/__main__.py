from medchat.cli import main

main()
