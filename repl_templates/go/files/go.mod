module devex.example/repl

go 1.22
