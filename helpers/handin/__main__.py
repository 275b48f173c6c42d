from helpers.handin.pack import main

main()
