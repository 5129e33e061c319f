package main

import "fmt"

func main() {
	fmt.Println("Hello from your Devex REPL!")
}
