package main

import (
	"fmt"
	"io"
	"strings"

	qr "github.com/piglig/go-qr"
)

// qrQuietZone is the light margin around a QR code, in modules: the four
// the QR standard asks for, since a terminal's own background may be dark.
const qrQuietZone = 4

// writeQR writes text as a QR code for a terminal: two rows of modules per
// line of text, with UTF-8 half blocks. The colours are set with ANSI
// escapes (light modules bright white, dark ones black) rather than left
// to the terminal, so the code scans whether its theme is light or dark.
func writeQR(w io.Writer, text string) error {
	// Low error correction: the smallest code, which a phone reads most
	// easily off a screen; a screen has no smudges to correct.
	code, err := qr.EncodeText(text, qr.Low)
	if err != nil {
		return fmt.Errorf("QR code: %w", err)
	}
	size := code.Size()
	light := func(x, y int) bool {
		if x < 0 || y < 0 || x >= size || y >= size {
			return true // the quiet zone
		}
		return !code.Module(x, y)
	}
	var b strings.Builder
	for y := -qrQuietZone; y < size+qrQuietZone; y += 2 {
		b.WriteString("\x1b[97;40m")
		for x := -qrQuietZone; x < size+qrQuietZone; x++ {
			top, bottom := light(x, y), light(x, y+1)
			switch {
			case top && bottom:
				b.WriteString("█")
			case top:
				b.WriteString("▀")
			case bottom:
				b.WriteString("▄")
			default:
				b.WriteString(" ")
			}
		}
		b.WriteString("\x1b[0m\n")
	}
	_, err = io.WriteString(w, b.String())
	return err
}
