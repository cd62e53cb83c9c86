// Package bench is Warren's benchmark suite: every figure beside the baseline
// it is judged against, measured in the same run on the same machine.
//
// It uses only the public API of package warren and its subpackages, so it
// measures what an importing program gets and keeps working when the
// internals change. Its cases are plain func(*testing.B) values: the
// Benchmark functions in bench_test.go run them under go test, and
// cmd/warren-bench runs them with testing.Benchmark and prints a table of
// figure, baseline and ratio (and writes it as JSON).
//
//	go test -run '^$' -bench . -benchmem ./bench/
//	go run ./bench/cmd/warren-bench -json bench.json
//
// With -short each case runs at a reduced scale (fewer idle clients), which
// is what CI runs with -benchtime 1x so the suite never rots; it asserts no
// timings.
package bench
