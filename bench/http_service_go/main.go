// A fixed-latency HTTP service for bench/async_enrich.py: GET /enrich?v=<value> answers
// "<value>:ok" after the latency given as the first argument (a Go duration, e.g. 10ms).
// Listens on a free 127.0.0.1 port and prints "PORT <n>" first. Go's scheduler keeps the
// latency close to the one asked for at thousands of requests per second, which a Python
// server on a shared 2-core machine does not (it adds 2-3 ms there).
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: http_service_go <latency, e.g. 10ms>")
		os.Exit(2)
	}
	latency, err := time.ParseDuration(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("PORT %d\n", ln.Addr().(*net.TCPAddr).Port)
	os.Stdout.Sync()
	http.HandleFunc("/enrich", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(latency)
		w.Write([]byte(r.URL.Query().Get("v") + ":ok"))
	})
	if err := http.Serve(ln, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
