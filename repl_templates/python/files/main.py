def main() -> None:
    print("Hello from your Devex REPL!")


if __name__ == "__main__":
    main()
