from medchat.cli.main import main

main()
