console.log("Hello from your Devex REPL!");
