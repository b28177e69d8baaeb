% The classic DeepProbLog MNIST sum: two images and their sum as the label.
% Query: sum(tensor(train(0)), tensor(train(1)), 7).

nn(gedi_net, [X], Y, [0,1,2,3,4,5,6,7,8,9]) :: digit(X, Y).

sum(X, Y, Z) :- digit(X, A), digit(Y, B), Z is A + B.
