package main

import (
	"bufio"
	"fmt"
	"strings"

	"github.com/warrenvpn/warren"
)

func (e *env) keygen(args []string) error {
	fs := e.newFlags("keygen", "keygen [--wireguard]")
	wg := fs.Bool("wireguard", false, "a WireGuard key (for wgPrivateKey), rather than a Noise static key (privateKey)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("keygen takes no arguments")
	}
	gen := warren.GenerateKeypair
	if *wg {
		gen = warren.GenerateWGKeypair
	}
	kp, err := gen()
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, kp.PrivateKey)
	fmt.Fprintln(e.stdout, kp.PublicKey)
	return nil
}

func (e *env) pubkey(args []string) error {
	fs := e.newFlags("pubkey", "pubkey < private.key")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("pubkey takes no arguments: it reads the private key from stdin")
	}
	line, err := bufio.NewReader(e.stdin).ReadString('\n')
	if err != nil && line == "" {
		return fmt.Errorf("reading the private key from stdin: %w", err)
	}
	k, err := warren.ParseKey(strings.TrimSpace(line))
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, k.PublicKey())
	return nil
}

func (e *env) version(args []string) error {
	if len(args) > 0 {
		return usagef("version takes no arguments")
	}
	fmt.Fprintln(e.stdout, "warren", warren.Version)
	return nil
}
