% Multi-digit addition of long numbers (N = 4, 15, 100 digits): digit-wise addition with
% carries, one compiled circuit per N whose size grows linearly in N.
%
% Query (DeepProbLog's convention, most significant digit first):
%   multi_addition([X1, ..., XN], [Y1, ..., YN], [S0, S1, ..., SN]).
% Xi, Yi: digit images (tensor(train(I))); S0 ... SN: the N + 1 digits of the sum (S0 is 0 or
% 1), each given as tensor(sum_digit(K, V)) = "digit V at position K".  The fixed network
% sum_digit (gedi_nesy/long_addition.py) reads such a term as V with probability 1, so the sum
% is an input of the circuit rather than a constant of it: queries of N-digit numbers share one
% compiled circuit whatever their sum.
%
% Why the program is written this way (measured in gedi_nesy/README.md, "Multi-digit addition"):
% - column/5 enumerates the sum digit D and the first digit A; the second digit B follows
%   (B = D - A - Cin mod 10): 10 x 10 proofs per column and carry, all of one column ground
%   before the next (add/5 recurses after column/5), so the SDD variables come column by column.
% - only_digit/2 states the annotated disjunction's exclusivity in the formula ("A and no other
%   value"): logically the same under the AD's constraint, but it keeps ProbLog's bottom-up SDD
%   compilation small.  Without it, the query of a single column compiles to an SDD of ~390k
%   nodes (3-9 s) and two columns do not finish in 100 s, because ProbLog conjoins the AD
%   constraints only at the end.

nn(gedi_net, [X], Y, [0,1,2,3,4,5,6,7,8,9]) :: digit(X, Y).
nn(sum_digit, [S], V, [0,1,2,3,4,5,6,7,8,9]) :: sum_digit(S, V).

only_digit(X, A) :- digit(X, A), \+ other_digit(X, A).
other_digit(X, A) :- digit(X, B), B \= A.
only_sum_digit(S, D) :- sum_digit(S, D), \+ other_sum_digit(S, D).
other_sum_digit(S, D) :- sum_digit(S, E), E \= D.

% column(X, Y, S, Cin, Cout): images X, Y and sum digit S agree with carry in Cin, carry out Cout.
column(X, Y, S, Cin, Cout) :-
    only_sum_digit(S, D), only_digit(X, A), B is (D - A - Cin) mod 10, only_digit(Y, B),
    Cout is (A + B + Cin) // 10.

% add(Xs, Ys, Ss, Cin, Cout): the columns, least significant first.
add([], [], [], C, C).
add([X|Xs], [Y|Ys], [S|Ss], Cin, Cout) :- column(X, Y, S, Cin, C), add(Xs, Ys, Ss, C, Cout).

rev([], Acc, Acc).
rev([H|T], Acc, R) :- rev(T, [H|Acc], R).

multi_addition(X, Y, [S0|S]) :-
    rev(X, [], RX), rev(Y, [], RY), rev(S, [], RS), add(RX, RY, RS, 0, C), only_sum_digit(S0, C).
