from llm_teach.cli import main

main()
